from hetsam.cli.main import main

raise SystemExit(main())
