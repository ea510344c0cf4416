import sys

from poolsvc.target.server import main

sys.exit(main())
