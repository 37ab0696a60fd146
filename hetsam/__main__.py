from hetsam.cli import main

raise SystemExit(main())
