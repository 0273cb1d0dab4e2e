"""`python -m kdeval ...`, as `kdeval ...`; also `accelerate launch -m kdeval distill ...`."""

import sys

from kdeval.cli import main

sys.exit(main())
