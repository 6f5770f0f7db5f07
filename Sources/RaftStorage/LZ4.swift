import CLZ4

/// LZ4 block compression through the system liblz4.
enum LZ4 {
    static func compress(_ input: [UInt8]) -> [UInt8] {
        guard !input.isEmpty else { return [] }
        precondition(input.count <= Int(LZ4_MAX_INPUT_SIZE), "snapshot of \(input.count) bytes exceeds LZ4's limit")
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var output = [UInt8](repeating: 0, count: bound)
        let written = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                source.withMemoryRebound(to: CChar.self) { source in
                    destination.withMemoryRebound(to: CChar.self) { destination in
                        LZ4_compress_default(source.baseAddress, destination.baseAddress, Int32(input.count), Int32(bound))
                    }
                }
            }
        }
        precondition(written > 0, "LZ4 failed to compress \(input.count) bytes into a buffer of its own bound")
        output.removeSubrange(Int(written)...)
        return output
    }

    /// Decompresses exactly `size` bytes; nil when the input is malformed or of another size.
    static func decompress(_ input: [UInt8], size: Int) -> [UInt8]? {
        guard size > 0 else { return input.isEmpty ? [] : nil }
        guard size <= Int(LZ4_MAX_INPUT_SIZE), !input.isEmpty else { return nil }
        var output = [UInt8](repeating: 0, count: size)
        let read = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                source.withMemoryRebound(to: CChar.self) { source in
                    destination.withMemoryRebound(to: CChar.self) { destination in
                        LZ4_decompress_safe(source.baseAddress, destination.baseAddress, Int32(input.count), Int32(size))
                    }
                }
            }
        }
        return read == Int32(size) ? output : nil
    }
}
