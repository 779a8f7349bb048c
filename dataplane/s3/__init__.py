"""The S3 protocol layer, side-neutral so the coordinator and agents can both serve S3 (issue 20).

Sans-IO cores: `sigv4` (request authentication), `chunked` (aws-chunked bodies, chunk signatures, checksum trailers),
`checksums`, `routing` (which operation a request is), `ranges` (Range and conditional requests), `listing`
(ListObjectsV2 pages), `xmlbodies` (request and response documents), `errors` (S3-shaped errors), `backend` (the
storage port). `http` is the aiohttp adapter; nothing here imports it, so the agent-only install never reaches aiohttp.
"""
