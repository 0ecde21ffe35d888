from ..cli.common import exit_process
from ..cli.evaluate import main

exit_process(main())
