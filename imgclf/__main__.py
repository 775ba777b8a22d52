"""`python -m imgclf`: the same as the `imgclf` command."""

import sys

from imgclf.cli import main

sys.exit(main())
