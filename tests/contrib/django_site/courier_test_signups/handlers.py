"""Found by courier.contrib.django's autodiscovery; appends to the ledger the test reads."""

import os

from courier import handler
from courier_test_signups.messages import Welcome


@handler(Welcome)
def welcome(message: Welcome) -> None:
    with open(os.environ["COURIER_TEST_LEDGER"], "a") as ledger:
        ledger.write(message.email + "\n")
