import Raft

extension ClusterSimulation {
    /// Once per tick: restarts, crashes, partitions, clock skew, membership changes, transfers.
    func injectFaults() {
        let faults = options.faults
        injectHostileMessages()
        for id in nodes.keys.sorted() {
            if let restartAt = nodes[id]!.restartAt, restartAt <= step, !nodes[id]!.isRetired {
                start(id)
                trace("node \(id) restarts")
            }
        }
        if let end = network.partitionEndsAt, end <= step {
            network.healAll()
            trace("partition heals")
        }
        for id in nodes.keys.sorted() {
            if let crashAt = nodes[id]!.crashAt, crashAt <= step, nodes[id]!.isUp {
                trace("node \(id) killed soon after its election")
                crash(id, at: nil)
            }
        }
        let running = memberIDs.filter { nodes[$0]!.isUp }
        let leader = running.first { nodes[$0]!.raft!.role == .leader }
        if random.chance(faults.crashRate), !running.isEmpty {
            let victim = leader.flatMap { random.chance(0.5) ? $0 : nil } ?? running[random.below(running.count)]
            crash(victim, at: nil)
        }
        if !network.isPartitioned, random.chance(faults.partitionRate) {
            partition(leader: leader)
        }
        if random.chance(faults.clockSkewRate), !running.isEmpty {
            let id = running[random.below(running.count)]
            nodes[id]!.tickPeriod = UInt64(3 + random.below(4))
            trace("node \(id) clock now ticks every \(nodes[id]!.tickPeriod) steps")
        }
        if let leader, nodes[leader]!.isUp {
            if random.chance(faults.membershipRate) { changeMembership(on: leader) }
            if random.chance(faults.transferRate), nodes[leader]!.raft?.role == .leader { transferLeadership(from: leader) }
        }
    }

    private func partition(leader: NodeID?) {
        let members = memberIDs
        guard members.count >= 2 else { return }
        let duration = UInt64(15 + random.below(80)) * Self.stepsPerTick
        let target = leader ?? members[random.below(members.count)]
        switch random.below(4) {
        case 0:
            // A random minority on one side.
            let size = 1 + random.below(max((members.count - 1) / 2, 1))
            var shuffled = members
            for position in stride(from: shuffled.count - 1, to: 0, by: -1) {
                shuffled.swapAt(position, random.below(position + 1))
            }
            let minority = Array(shuffled.prefix(size))
            network.isolate(minority, from: members.filter { !minority.contains($0) })
            trace("partition: minority \(minority) cut off")
        case 1:
            network.isolate([target], from: members.filter { $0 != target })
            trace("partition: node \(target) isolated")
        case 2:
            // Asymmetric: the node hears the others but cannot reach them.
            for other in members where other != target { network.block(from: target, to: other) }
            trace("partition: node \(target) cannot send (asymmetric)")
        default:
            for other in members where other != target { network.block(from: other, to: target) }
            trace("partition: node \(target) cannot receive (asymmetric)")
        }
        network.partitionEndsAt = step + duration
        report.partitions += 1
    }

    /// Proposes one membership change on the leader: add a learner, promote, remove (the leader
    /// included), demote, or replace a voter through a joint configuration.
    private func changeMembership(on leader: NodeID) {
        guard let raft = nodes[leader]!.raft, !raft.confState.isJoint, raft.pendingConfIndex <= raft.appliedIndex else { return }
        let conf = raft.confState
        let voters = conf.voters
        let learners = conf.learners
        var choices: [ConfChange] = []
        if let learner = learners.first {
            choices.append(.addVoter(learner))
            if voters.count >= 3 {
                let outgoing = voters[random.below(voters.count)]
                choices.append(ConfChange([.init(.addVoter, learner), .init(.removeNode, outgoing)]))
            }
        }
        if voters.count < 7 && learners.count < 2 && nodes.count < 14 {
            choices.append(.addLearner(nextNodeID))
        }
        if voters.count > 3 {
            let victim = voters[random.below(voters.count)]
            choices.append(.removeNode(victim))
            choices.append(ConfChange([.init(.addLearner, victim)], transition: .jointImplicit))
        }
        guard !choices.isEmpty else { return }
        let change = choices[random.below(choices.count)]
        let addsNewNode = change.changes.contains { $0.node == nextNodeID }
        if addsNewNode {
            nodes[nextNodeID] = SimulatedNode(id: nextNodeID, disk: MemoryStorage(.joining))
            start(nextNodeID)
            nextNodeID += 1
        }
        do {
            try nodes[leader]!.raft!.proposeConfChange(change)
            try checker.checkConfChangeProposal(nodes[leader]!.raft!)
            report.membershipChanges += 1
            trace("leader \(leader) proposes \(change.changes.map { "\($0.operation)(\($0.node))" })")
        } catch let violation as SimulationViolation {
            report.violation = report.violation ?? violation
        } catch {
            // Refused (e.g. a change is pending): nothing happened.
        }
    }

    private func transferLeadership(from leader: NodeID) {
        let voters = nodes[leader]!.raft!.confState.voters.filter { $0 != leader && nodes[$0]?.isUp == true }
        guard !voters.isEmpty else { return }
        let target = voters[random.below(voters.count)]
        if (try? nodes[leader]!.raft!.transferLeadership(to: target)) != nil {
            report.transfers += 1
            trace("leader \(leader) transfers to \(target)")
        }
    }

    /// Once per tick: time out stale operations and start new ones.
    func driveClients() throws(SimulationViolation) {
        if let violation = report.violation { throw violation }
        try clients.expireTimedOut(now: step, nodes: nodes)
        guard random.chance(options.clientRate) else { return }
        let running = nodes.keys.sorted().filter { nodes[$0]!.isUp }
        guard !running.isEmpty else { return }
        let leaders = running.filter { nodes[$0]!.raft!.role == .leader }
        let node = !leaders.isEmpty && random.chance(0.75) ? leaders[random.below(leaders.count)] : running[random.below(running.count)]
        let key = UInt8(random.below(options.keyCount))
        if random.chance(options.readShare) {
            clients.startRead(key: key, on: node, nodes: &nodes, now: step)
        } else {
            clients.startWrite(key: key, on: node, nodes: &nodes, now: step)
        }
    }
}

extension ClusterSimulation {
    /// The hostile-peer fault: each running node may receive one message that a correct peer
    /// never sends. All but the non-member's vote request must be screened out; that one is
    /// well-formed and may only cost an election.
    func injectHostileMessages() {
        let rate = options.faults.hostileMessageRate
        guard rate > 0 else { return }
        let limit = RaftNode.maxAcceptedValue
        for id in nodes.keys.sorted() where nodes[id]!.isUp && random.chance(rate) {
            let raft = nodes[id]!.raft!
            let members = memberIDs.filter { $0 != id }
            let member = members.isEmpty ? NodeID(9_999) : members[random.below(members.count)]
            var message: Message
            switch random.below(9) {
            case 0:
                message = Message(kind: .vote, from: member, to: id, term: .max - 1, logTerm: .max - 1, index: .max - 1)
            case 1:
                message = Message(kind: .append, from: member, to: id, term: raft.term, logTerm: raft.term, index: .max - 2, commit: .max)
            case 2:
                // Entries with a gap after `index`.
                let index = raft.lastIndex
                message = Message(kind: .append, from: member, to: id, term: raft.term, logTerm: 0, index: index, entries: [
                    Entry(term: raft.term, index: index + 1, kind: .normal, data: []),
                    Entry(term: raft.term, index: index + 3, kind: .normal, data: []),
                ])
            case 3:
                // An entry of a later term than the message's.
                message = Message(kind: .append, from: member, to: id, term: raft.term, logTerm: 0, index: raft.lastIndex, entries: [
                    Entry(term: raft.term + 5, index: raft.lastIndex + 1, kind: .normal, data: []),
                ])
            case 4:
                message = Message(kind: .appendResponse, from: member, to: id, term: raft.term, index: raft.lastIndex + 1_000)
            case 5:
                message = Message(kind: .appendResponse, from: member, to: id, term: raft.term, index: 1, reject: true, rejectHint: limit + 1)
            case 6:
                message = Message(kind: .snapshot, from: member, to: id, term: raft.term, snapshot: Snapshot(
                    metadata: SnapshotMetadata(index: raft.lastIndex + 10, term: raft.term + 1, confState: ConfState(voters: [id])), data: []
                ))
            case 7:
                message = Message(kind: .heartbeat, from: .none, to: id, term: raft.term + 1, commit: .max)
            default:
                // A non-member asking for votes at the next term: well-formed, only disruptive.
                message = Message(kind: .preVote, from: 9_999, to: id, term: raft.term + 1, logTerm: 0, index: 0)
            }
            report.hostileMessages += 1
            _ = network.submit(message, at: step, faults: options.faults, random: &random)
        }
    }
}
