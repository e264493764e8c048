import sys

from selfspec.cli import main

sys.exit(main())
