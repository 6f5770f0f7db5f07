public import Raft
public import WireCoding

/// How a membership configuration is written wherever Fulcrum persists or sends one (the
/// snapshot record in storage, InstallSnapshot on the wire): the four member lists, then the
/// auto-leave flag.
extension ByteWriter {
    public mutating func write(_ conf: ConfState) {
        write(conf.voters)
        write(conf.votersOutgoing)
        write(conf.learners)
        write(conf.learnersNext)
        write(conf.autoLeave)
    }
}

extension ByteReader {
    public mutating func readConfState() throws(DecodingError) -> ConfState {
        ConfState(
            voters: try readUInt64Array(), votersOutgoing: try readUInt64Array(), learners: try readUInt64Array(),
            learnersNext: try readUInt64Array(), autoLeave: try readBool()
        )
    }
}
