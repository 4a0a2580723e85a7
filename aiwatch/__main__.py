import sys

from aiwatch.cli import main

sys.exit(main())
