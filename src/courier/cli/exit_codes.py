"""Exit codes of the ``courier`` command, for scripts and supervisors.

=====  ==========================================================================
0      done; for ``consume``: stopped as asked (limit, time, memory, empty, signal)
1      an unexpected error (a bug: the traceback is printed); for ``dispatch``:
       a handler it ran in this process (``sync://``, unrouted) raised
2      bad usage or configuration: nothing was done (``dispatch -``: nothing from
       the bad line on; the lines before it were dispatched)
3      ``consume`` stopped because ``--failure-limit`` failures were reached
4      the message, transport or type named does not exist
5      a broker could not be reached or refused the operation
6      ``failed retry``: some invalid messages still cannot be decoded; they stay
       in the store with the new reason, every other message was retried
7      ``consume --processes``: one process failed ``--crash-limit`` times within
       ``--crash-window`` seconds (a crash loop), so the pool stopped them all
8      ``health``: unhealthy (messages wait and no worker makes progress, or more
       failures than ``--max-failed``); the one line on stdout says which
130    ``consume`` was stopped at once by a second Ctrl-C (or stop signal): the
       message in hand was given back to the broker, to be delivered again
=====  ==========================================================================
"""

from __future__ import annotations

OK = 0
ERROR = 1
USAGE = 2
FAILURE_LIMIT = 3
NOT_FOUND = 4
TRANSPORT = 5
NOT_RETRIED = 6
CRASH_LOOP = 7
UNHEALTHY = 8
INTERRUPTED = 130
