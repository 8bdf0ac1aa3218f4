"""allocd.v1.AccessService: token revocation."""

from __future__ import annotations

from allocd.v1 import access_service_pb2 as pb
from allocd.v1 import access_service_pb2_grpc as pb_grpc

from core import commands as c
from service.engine import Engine
from service.errors import Context, unary
from service.servicers.inventory import mutation_result


class AccessServicer(pb_grpc.AccessServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @unary
    async def RevokeToken(self, request: pb.RevokeTokenRequest,
                          context: Context) -> pb.RevokeTokenResponse:
        return await self.engine.mutate(
            "RevokeToken", request, lambda: c.RevokeToken(request.token_id),
            lambda o: pb.RevokeTokenResponse(result=mutation_result(o)))

    @unary
    async def ListRevokedTokens(self, request: pb.ListRevokedTokensRequest,
                                context: Context) -> pb.ListRevokedTokensResponse:
        return pb.ListRevokedTokensResponse(
            token_ids=sorted(self.engine.ledger.revoked_tokens))
