"""``python -m flowsci`` (and ``torchrun --nproc_per_node=N -m flowsci train ...``)."""

import sys

from flowsci.cli import main

sys.exit(main())
