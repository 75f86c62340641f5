"""course_lib: the implementation behind "Large models from scratch: develop and fine-tune".

One module per idea, in the order the course teaches them; notebooks import from here.
"""

from course_lib.env import (
    cache_dir,
    choose_device,
    display_path,
    fast_mode,
    get_device,
    pick,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = ["cache_dir", "choose_device", "display_path", "fast_mode", "get_device", "pick", "seed_everything"]
