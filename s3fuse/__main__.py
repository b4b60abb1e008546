import sys

from s3fuse.cli import main

sys.exit(main())
