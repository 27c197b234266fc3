import sys

from bots.run import main

sys.exit(main())
