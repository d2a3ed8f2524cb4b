"""Amazon SQS transport for courier, on boto3 (SNS for events where configured).

``pip install "courier-bus[sqs]"`` installs it; ``sqs://`` DSNs then open an
:class:`SqsTransport`. See docs/transports/sqs.md.
"""

from courier_sqs.options import SqsOptions
from courier_sqs.transport import SqsTransport

__all__ = ["SqsOptions", "SqsTransport"]
