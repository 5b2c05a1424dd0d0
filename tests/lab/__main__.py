"""`python3 -m tests.lab up|down|reboot|exec|shell|list NAME` from the checkout, as root."""

import sys

from tests.lab.cli import main

sys.exit(main())
