from mmalign_utils.cli import main

raise SystemExit(main())
