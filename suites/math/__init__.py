"""Math reasoning: our synthetic word problems, GSM8K, and competition math (MATH-500, AIME)."""

from kdeval.tasks import Suite
from kdeval_suites.math.tasks import Aime, Gsm8k, Math500, MathSynth

SUITE = Suite(
    name="math",
    family="math",
    description=(
        "Math problems: the final number of a word problem's solution is parsed and compared; "
        "a competition problem's boxed answer is checked for equivalence by math-verify."
    ),
    tasks=[MathSynth(), Gsm8k(), Math500(), Aime()],
)
