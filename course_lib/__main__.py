"""``python -m course_lib pretrain|finetune|generate|predict ...``: see :mod:`course_lib.cli`."""

from course_lib.cli import main

raise SystemExit(main())
