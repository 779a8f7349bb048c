"""The S3 protocol layer, side-neutral so the coordinator and agents can both serve S3 (issue 20; docs/storage.md).

Sans-IO cores: `auth` with `sigv4` and `sigv2` (request authentication), `chunked` (aws-chunked bodies, chunk and
trailer signatures), `checksums` and `integrity` (x-amz-checksum-*, Content-MD5, the signed SHA-256), `body` (the two
joined), `routing` (which operation a request is), `ranges` (Range and preconditions), `listing` (ListObjectsV2
pages), `multipart`, `xmlbodies`, `errors` (S3-shaped errors as values), `backend` (the storage port) and `handlers`
(the operations over that port). `http` is the aiohttp adapter; nothing here imports it, so the agent-only install
never reaches aiohttp.
"""
