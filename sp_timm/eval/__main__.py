from .._cli_utils import exit_process
from . import main

exit_process(main())
