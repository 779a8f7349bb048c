"""The object store behind the S3 layer (issue 20): content-addressed chunks on devices that offer storage, placed
by a pure core (`placement`), kept at R copies by a pure repair planner (`repair`), with metadata (buckets, manifests,
chunk locations, uploads) behind the `Metadata` port (`ports`) that the coordinator's store implements, and chunk
transfer behind the `ChunkClient` port. `store.ObjectBackend` joins them into a `dataplane.s3.backend.Backend`."""
