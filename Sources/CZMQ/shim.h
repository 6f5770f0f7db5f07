// The system libzmq (Debian: libzmq3-dev): engines publish KV-cache events over ZeroMQ.
#include <zmq.h>
