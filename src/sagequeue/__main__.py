from sagequeue.cli.main import main

raise SystemExit(main())
