import sys

from edgescope.cli import main

sys.exit(main())
