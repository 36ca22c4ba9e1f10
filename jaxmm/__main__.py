import sys

from jaxmm.cli import main

sys.exit(main())
