# The service package first: it sets what must be set before gRPC loads (its fork
# handlers off, so that a snapshot child is left alone), as the server's entry points do.
import service  # noqa: F401
