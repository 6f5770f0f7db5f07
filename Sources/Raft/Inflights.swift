/// The append messages sent to one follower and not yet acknowledged: a bounded FIFO of
/// (last index, bytes) used for flow control. Full means "stop sending until acknowledgements".
struct Inflights: Sendable, Hashable {
    private(set) var lastIndexes: [LogIndex] = []
    private(set) var sizes: [Int] = []
    private var head = 0
    private(set) var bytes = 0
    let capacity: Int
    let byteCapacity: Int

    init(capacity: Int, byteCapacity: Int) {
        self.capacity = capacity
        self.byteCapacity = byteCapacity
    }

    var count: Int { lastIndexes.count - head }
    var isFull: Bool { count >= capacity || (byteCapacity > 0 && bytes >= byteCapacity) }

    mutating func add(lastIndex: LogIndex, bytes size: Int) {
        lastIndexes.append(lastIndex)
        sizes.append(size)
        bytes += size
    }

    /// Frees every message whose last index is at or below `index`.
    mutating func free(upTo index: LogIndex) {
        while head < lastIndexes.count, lastIndexes[head] <= index {
            bytes -= sizes[head]
            head += 1
        }
        compactStorage()
    }

    /// Frees the oldest message: lets one more append through when acknowledgements were lost.
    mutating func freeFirst() {
        guard head < lastIndexes.count else { return }
        bytes -= sizes[head]
        head += 1
        compactStorage()
    }

    mutating func reset() {
        lastIndexes.removeAll(keepingCapacity: true)
        sizes.removeAll(keepingCapacity: true)
        head = 0
        bytes = 0
    }

    private mutating func compactStorage() {
        if head == lastIndexes.count {
            reset()
        } else if head > 64 && head * 2 > lastIndexes.count {
            lastIndexes.removeFirst(head)
            sizes.removeFirst(head)
            head = 0
        }
    }
}
