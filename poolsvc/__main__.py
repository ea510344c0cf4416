import sys

from poolsvc.cli.main import main

sys.exit(main())
