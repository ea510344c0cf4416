import sys

from poolsvc.target.serve import main

sys.exit(main())
