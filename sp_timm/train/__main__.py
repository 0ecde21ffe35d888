from ..cli.common import exit_process
from ..cli.train import main

exit_process(main())
