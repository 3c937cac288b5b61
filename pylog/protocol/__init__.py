"""Kafka's wire protocol: framing, headers, request/response codecs.

Knows bytes, not brokers (see docs/architecture.md): the server (:mod:`pylog.server`)
and the network clients (:mod:`pylog.client`) build on it.  Message schemas come from
``kio``, generated from Kafka's own message definitions; the Fetch response is written
by hand (:mod:`pylog.protocol.fetch`) so record batches are sent without a copy.
"""
from pylog.protocol.apis import API_NAMES, SUPPORTED, ApiKey, ApiSpec
from pylog.protocol.codec import (RequestHeader, UnsupportedRequest, build, build_request, build_response,
                                  decode_request, decode_response, encode_request, encode_response,
                                  parse_request_header)
from pylog.protocol.fetch import FetchPartitionData, FetchTopicData, encode_fetch_response

__all__ = ["API_NAMES", "SUPPORTED", "ApiKey", "ApiSpec", "RequestHeader", "UnsupportedRequest", "build",
           "build_request", "build_response", "decode_request", "decode_response", "encode_request",
           "encode_response", "parse_request_header", "FetchPartitionData", "FetchTopicData",
           "encode_fetch_response"]
