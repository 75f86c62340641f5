"""``python -m course_lib pretrain|finetune|generate|predict|chat|serve ...``: see :mod:`course_lib.cli`."""

from course_lib.cli import main

raise SystemExit(main())
