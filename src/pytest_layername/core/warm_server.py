"""The warm server's preload (:mod:`.fresh_interpreter`): importing this module, in the server only, imports
torch, Dynamo and inductor and records which environment variables those imports read."""

from .fresh_interpreter import record_server_reads

record_server_reads()
