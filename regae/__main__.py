import sys

from regae.cli import main

sys.exit(main())
