"""The bus: wire contract, embedded broker, Mosquitto config generation and the MQTT client adapter.

Only `broker.wire` (and the client adapter) is shared by the agent and the coordinator; the embedded broker
(`broker.embedded`) needs the `broker` extra (amqtt) and is never imported by the agent.
"""
