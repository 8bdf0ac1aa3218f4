"""allocd's domain core: catalogue, sharded inventory ledger and compiled kernels.

Pure: nothing here imports grpc, redis, asyncio or the service layer, and
nothing reads a clock; time is passed in as epoch milliseconds.
"""
