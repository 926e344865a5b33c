"""`python -m compression build ...`: the command line lives in `loading.build`.

The compression code itself stays pure torch; writing artifact folders is `loading/`'s job, so this
entry point only forwards to it.
"""

import sys

from loading.build import main

sys.exit(main())
