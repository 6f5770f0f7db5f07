#!/bin/sh
# preStop: when this pod leads, hand leadership to the most caught-up voter before the pod
# gets SIGTERM (the node also does this itself on SIGTERM; doing it here first means no
# request meets a leader that is shutting down). Followers need nothing.
if curl -sf http://127.0.0.1:8100/admin/cluster | grep -q '"role":"leader"'; then
    FULCRUM_ENDPOINTS=http://127.0.0.1:8100 fulcrumctl leader transfer || true
fi
