"""python -m initium.service.worker: run one worker process over a data directory."""

from initium.service.worker.loop import main

raise SystemExit(main())
