"""python -m tardistill -> cli.main()."""

import sys

from tardistill.cli import main

sys.exit(main())
