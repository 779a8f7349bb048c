from cloudless.cli import main

raise SystemExit(main())
