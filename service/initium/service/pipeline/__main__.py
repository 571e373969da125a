"""python -m initium.service.pipeline: run one worker process over a data directory."""

from initium.service.pipeline.loop import main

raise SystemExit(main())
