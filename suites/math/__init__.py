"""Math reasoning: our synthetic word problems plus a loader for GSM8K."""

from kdeval.tasks import Suite
from kdeval_suites.math.tasks import Gsm8k, MathSynth

SUITE = Suite(
    name="math",
    family="math",
    description="Arithmetic word problems; the final number of the solution is parsed and compared.",
    tasks=[MathSynth(), Gsm8k()],
)
