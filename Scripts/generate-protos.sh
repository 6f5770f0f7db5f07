#!/usr/bin/env bash
# Regenerates the committed Swift code of the upstream protocols Fulcrum speaks. The build never
# runs a protoc plugin; run this after changing a file under Protos/ and commit the output.
#   Scripts/generate-protos.sh
# Needs protoc (Debian: protobuf-compiler) and the plugins protoc-gen-swift and
# protoc-gen-grpc-swift-2 (built from grpc/grpc-swift-protobuf 2.x with `swift build -c release`);
# PLUGIN_DIR names the folder holding them.
#
# Protos/rtp-llm/flexlb_schedule_service.proto is alibaba/rtp-llm's
# rtp_llm/cpp/model_rpc/proto/flexlb_schedule_service.proto at 4b8d39cd5 (2026-08-20), unchanged;
# Protos/rtp-llm/model_rpc_service.proto restates the engine RPC a balancer reads from upstream's
# model_rpc_service.proto at the same commit (names and field numbers; a subset of messages).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies protobuf-compiler
plugins="${PLUGIN_DIR:?set PLUGIN_DIR to the folder holding protoc-gen-swift and protoc-gen-grpc-swift-2}"
out=Sources/FlexLBProtocol
protoc --proto_path=Protos/rtp-llm \
    --plugin=protoc-gen-swift="$plugins/protoc-gen-swift" --swift_out="$out" --swift_opt=Visibility=Public \
    --plugin=protoc-gen-grpc-swift="$plugins/protoc-gen-grpc-swift-2" --grpc-swift_out="$out" \
    --grpc-swift_opt=Visibility=Public,Client=true,Server=true \
    Protos/rtp-llm/flexlb_schedule_service.proto Protos/rtp-llm/model_rpc_service.proto
echo "generated into $out:"; ls "$out"
