"""beanstalkd transport for courier, on greenstalk.

``pip install "courier-bus[beanstalk]"`` installs it; ``beanstalk://`` and
``beanstalkd://`` DSNs then open a :class:`BeanstalkTransport`. See
docs/transports/beanstalk.md.
"""

from courier_beanstalk.buried import BuriedJob, BuriedJobs
from courier_beanstalk.options import BeanstalkOptions
from courier_beanstalk.php import PhpJobSerializer
from courier_beanstalk.transport import BeanstalkTransport

__all__ = ["BeanstalkOptions", "BeanstalkTransport", "BuriedJob", "BuriedJobs", "PhpJobSerializer"]
