"""kdeval: did your distillation work?"""

__version__ = "0.1.0"
