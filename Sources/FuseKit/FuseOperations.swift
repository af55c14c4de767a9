import CFuse
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The libfuse low-level callbacks. They are `@convention(c)` closures built in
// a nonisolated context (never on the main actor: FUSE worker threads call
// them) and reach the Swift side through `fuse_req_userdata`.

/// A request handle that may be replied to from another thread.
final class PendingOpen: Sendable {
    nonisolated(unsafe) let request: fuse_req_t
    let fileInfo: fuse_file_info
    let ino: UInt64
    private let replied = Atomic<Bool>(false)

    init(request: fuse_req_t, fileInfo: fuse_file_info, ino: UInt64) {
        self.request = request
        self.fileInfo = fileInfo
        self.ino = ino
    }

    /// True exactly once.
    func claim() -> Bool {
        !replied.exchange(true, ordering: .acquiringAndReleasing)
    }
}

private let directoryType: UInt32 = 0o040000

private func sessionContext(_ req: fuse_req_t?) -> FuseSessionContext {
    Unmanaged<FuseSessionContext>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

// MARK: the one place where a FuseError becomes a reply

private func replyError(_ req: fuse_req_t?, _ error: FuseError) {
    _ = fuse_reply_err(req, error.errno)
}

private func replyOK(_ req: fuse_req_t?) {
    _ = fuse_reply_err(req, 0)
}

// MARK: conversions

private func makeStat(_ a: FuseAttributes) -> stat {
    var st = stat()
    st.st_ino = numericCast(a.ino)
    st.st_mode = numericCast(a.mode)
    st.st_nlink = numericCast(a.nlink)
    st.st_size = numericCast(a.size)
    st.st_uid = a.uid
    st.st_gid = a.gid
    st.st_blksize = 4096
    st.st_blocks = numericCast((a.size + 511) / 512)
    let time = timespec(tv_sec: numericCast(a.mtimeSeconds), tv_nsec: 0)
    st.st_mtim = time
    st.st_ctim = time
    st.st_atim = time
    return st
}

private func makeEntry(_ e: FuseEntry) -> fuse_entry_param {
    var param = fuse_entry_param()
    param.ino = e.attributes.ino
    param.generation = 0
    param.attr = makeStat(e.attributes)
    param.attr_timeout = e.attributeTimeout
    param.entry_timeout = e.entryTimeout
    return param
}

private func apply(_ open: FuseOpenResult, to info: inout fuse_file_info) {
    info.fh = open.fileHandle
    info.keep_cache = open.keepCache ? 1 : 0
    info.direct_io = open.directIO ? 1 : 0
}

/// A name from the kernel. Names that are not UTF-8 cannot exist in a
/// FuseFileSystem (its names are Strings): nil.
private func decodeName(_ cName: UnsafePointer<CChar>?) -> String? {
    guard let cName else { return nil }
    return String(validatingCString: cName)
}

private func replyEntry(_ req: fuse_req_t?, _ entry: FuseEntry) {
    var param = makeEntry(entry)
    _ = fuse_reply_entry(req, &param)
}

private func replyAttributes(_ req: fuse_req_t?, _ attributes: FuseAttributes, _ timeout: Double) {
    var st = makeStat(attributes)
    _ = fuse_reply_attr(req, &st, timeout)
}

// MARK: open (possibly answered later)

private func finishOpen(_ context: FuseSessionContext, _ pending: PendingOpen,
                       _ result: Result<FuseOpenResult, FuseError>) {
    guard pending.claim() else {
        context.logger.error("open replied more than once; later replies ignored",
                             metadata: ["fuse.ino": "\(pending.ino)"])
        return
    }
    let sent: Int32? = context.whileAlive {
        switch result {
        case .success(let opened):
            var info = pending.fileInfo
            apply(opened, to: &info)
            return fuse_reply_open(pending.request, &info)
        case .failure(let error):
            replyError(pending.request, error)
            return 0
        }
    }
    if case .success(let opened) = result, sent != 0 {
        // The opener went away (interrupted) or the session ended: nobody will release it.
        context.logger.debug("open reply not delivered; releasing",
                             metadata: ["fuse.ino": "\(pending.ino)", "fuse.result": "\(sent.map(String.init) ?? "session gone")"])
        context.fileSystem.release(ino: pending.ino, fileHandle: opened.fileHandle)
    }
}

enum FuseOperations {
    static func make() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()

        ops.`init` = { userdata, conn in
            guard let userdata, let conn else { return }
            let context = Unmanaged<FuseSessionContext>.fromOpaque(userdata).takeUnretainedValue()
            let capable = conn.pointee.capable
            var want = conn.pointee.want
            for flag in [cfuse_cap_async_read, cfuse_cap_splice_write, cfuse_cap_splice_move,
                         cfuse_cap_parallel_dirops, cfuse_cap_auto_inval_data, cfuse_cap_atomic_o_trunc] where capable & flag != 0 {
                want |= flag
            }
            // No readdirplus callback: plain readdir, lookups come separately.
            want &= ~(cfuse_cap_readdirplus | cfuse_cap_readdirplus_auto)
            conn.pointee.want = want
            // max_write and max_read stay at libfuse's maximum (its buffer size, 1 MiB
            // with the kernel's max_pages); the kernel's max_readahead is a ceiling.
            conn.pointee.max_background = 64
            conn.pointee.congestion_threshold = 48
            if capable & cfuse_cap_splice_write == 0 {
                context.logger.info("kernel does not offer splice; reads are copied")
            }
        }

        ops.lookup = { req, parent, cName in
            let context = sessionContext(req)
            context.raiseReadAheadOnce()
            guard let name = decodeName(cName) else { return replyError(req, .noEntry) }
            do throws(FuseError) {
                replyEntry(req, try context.fileSystem.lookup(parent: parent, name: name))
            } catch {
                replyError(req, error)
            }
        }

        ops.forget = { req, ino, lookups in
            sessionContext(req).fileSystem.forget(ino: ino, lookups: lookups)
            fuse_reply_none(req)
        }

        ops.forget_multi = { req, count, forgets in
            let fileSystem = sessionContext(req).fileSystem
            if let forgets {
                for index in 0..<count {
                    let item = forgets[index]
                    fileSystem.forget(ino: item.ino, lookups: item.nlookup)
                }
            }
            fuse_reply_none(req)
        }

        ops.getattr = { req, ino, _ in
            let context = sessionContext(req)
            context.raiseReadAheadOnce()
            do throws(FuseError) {
                let (attributes, timeout) = try context.fileSystem.getattr(ino: ino)
                replyAttributes(req, attributes, timeout)
            } catch {
                replyError(req, error)
            }
        }

        ops.setattr = { req, ino, attr, toSet, _ in
            guard let attr else { return replyError(req, .invalid) }
            var changes = FuseAttributeChanges()
            if toSet & cfuse_set_attr_size != 0 { changes.size = UInt64(clamping: attr.pointee.st_size) }
            if toSet & cfuse_set_attr_mode != 0 { changes.mode = UInt32(attr.pointee.st_mode) & 0o7777 }
            if toSet & cfuse_set_attr_uid != 0 { changes.uid = attr.pointee.st_uid }
            if toSet & cfuse_set_attr_gid != 0 { changes.gid = attr.pointee.st_gid }
            if toSet & cfuse_set_attr_mtime_now != 0 {
                changes.modificationTime = .now
            } else if toSet & cfuse_set_attr_mtime != 0 {
                changes.modificationTime = .seconds(Int64(attr.pointee.st_mtim.tv_sec))
            }
            if toSet & cfuse_set_attr_atime_now != 0 {
                changes.accessTime = .now
            } else if toSet & cfuse_set_attr_atime != 0 {
                changes.accessTime = .seconds(Int64(attr.pointee.st_atim.tv_sec))
            }
            do throws(FuseError) {
                let (attributes, timeout) = try sessionContext(req).fileSystem.setattr(ino: ino, changes: changes)
                replyAttributes(req, attributes, timeout)
            } catch {
                replyError(req, error)
            }
        }

        ops.readlink = { req, ino in
            do throws(FuseError) {
                let target = try sessionContext(req).fileSystem.readlink(ino: ino)
                _ = target.withCString { fuse_reply_readlink(req, $0) }
            } catch {
                replyError(req, error)
            }
        }

        ops.mkdir = { req, parent, cName, mode in
            guard let name = decodeName(cName) else { return replyError(req, .invalid) }
            do throws(FuseError) {
                replyEntry(req, try sessionContext(req).fileSystem.mkdir(parent: parent, name: name, mode: UInt32(mode)))
            } catch {
                replyError(req, error)
            }
        }

        ops.unlink = { req, parent, cName in
            guard let name = decodeName(cName) else { return replyError(req, .noEntry) }
            do throws(FuseError) {
                try sessionContext(req).fileSystem.unlink(parent: parent, name: name)
                replyOK(req)
            } catch {
                replyError(req, error)
            }
        }

        ops.rmdir = { req, parent, cName in
            guard let name = decodeName(cName) else { return replyError(req, .noEntry) }
            do throws(FuseError) {
                try sessionContext(req).fileSystem.rmdir(parent: parent, name: name)
                replyOK(req)
            } catch {
                replyError(req, error)
            }
        }

        ops.rename = { req, parent, cName, newParent, cNewName, flags in
            // RENAME_NOREPLACE / RENAME_EXCHANGE are not offered; callers fall back on EINVAL.
            guard flags == 0 else { return replyError(req, .invalid) }
            guard let name = decodeName(cName) else { return replyError(req, .noEntry) }
            guard let newName = decodeName(cNewName) else { return replyError(req, .invalid) }
            do throws(FuseError) {
                try sessionContext(req).fileSystem.rename(parent: parent, name: name, newParent: newParent, newName: newName)
                replyOK(req)
            } catch {
                replyError(req, error)
            }
        }

        ops.open = { req, ino, fi in
            guard let req, let fi else { return replyError(req, .invalid) }
            let context = sessionContext(req)
            context.raiseReadAheadOnce()
            let pending = PendingOpen(request: req, fileInfo: fi.pointee, ino: ino)
            context.fileSystem.open(ino: ino, flags: fi.pointee.flags) { result in
                finishOpen(context, pending, result)
            }
        }

        ops.read = { req, ino, size, offset, fi in
            guard let fi else { return replyError(req, .badFileHandle) }
            let context = sessionContext(req)
            do throws(FuseError) {
                switch try context.fileSystem.read(ino: ino, fileHandle: fi.pointee.fh, offset: Int64(offset), size: size) {
                case .bytes(let bytes):
                    let count = min(bytes.count, size)
                    _ = bytes.withUnsafeBytes { buffer in
                        fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), count)
                    }
                case .fileDescriptor(let fd, let fdOffset, let count):
                    // A positive result is an errno libfuse already replied with.
                    let result = cfuse_reply_fd(req, fd, off_t(fdOffset), max(0, min(count, size)))
                    if result > 0 {
                        context.logger.warning("read from descriptor failed",
                                               metadata: ["fuse.ino": "\(ino)", "fuse.errno": "\(result)"])
                    }
                }
            } catch {
                replyError(req, error)
            }
        }

        ops.write = { req, ino, buf, size, offset, fi in
            guard let fi else { return replyError(req, .badFileHandle) }
            do throws(FuseError) {
                let data = UnsafeRawBufferPointer(start: buf, count: buf == nil ? 0 : size)
                let written = try sessionContext(req).fileSystem.write(ino: ino, fileHandle: fi.pointee.fh,
                                                                offset: Int64(offset), data: data)
                _ = fuse_reply_write(req, max(0, min(written, size)))
            } catch {
                replyError(req, error)
            }
        }

        ops.flush = { req, ino, fi in
            guard let fi else { return replyError(req, .badFileHandle) }
            do throws(FuseError) {
                try sessionContext(req).fileSystem.flush(ino: ino, fileHandle: fi.pointee.fh)
                replyOK(req)
            } catch {
                replyError(req, error)
            }
        }

        ops.release = { req, ino, fi in
            if let fi {
                sessionContext(req).fileSystem.release(ino: ino, fileHandle: fi.pointee.fh)
            }
            replyOK(req)
        }

        ops.fsync = { req, ino, _, fi in
            guard let fi else { return replyError(req, .badFileHandle) }
            do throws(FuseError) {
                try sessionContext(req).fileSystem.fsync(ino: ino, fileHandle: fi.pointee.fh)
                replyOK(req)
            } catch {
                replyError(req, error)
            }
        }

        ops.opendir = { req, ino, fi in
            guard let fi else { return replyError(req, .invalid) }
            let context = sessionContext(req)
            context.raiseReadAheadOnce()
            do throws(FuseError) {
                let listing = try context.fileSystem.readdir(ino: ino)
                var items: [FuseSessionContext.DirectoryItem] = []
                items.reserveCapacity(listing.count + 2)
                items.append(.init(name: ".", ino: ino, mode: directoryType))
                items.append(.init(name: "..", ino: fuseRootInode, mode: directoryType))
                for entry in listing where entry.name != "." && entry.name != ".." {
                    guard !entry.name.isEmpty, !entry.name.utf8.contains(UInt8(ascii: "/")),
                          !entry.name.utf8.contains(0) else {
                        context.logger.warning("readdir skipped an invalid name",
                                               metadata: ["fuse.ino": "\(ino)", "fuse.name": "\(entry.name)"])
                        continue
                    }
                    items.append(.init(name: entry.name, ino: entry.ino, mode: entry.mode))
                }
                fi.pointee.fh = context.openDirectory(items)
                if fuse_reply_open(req, fi) != 0 {
                    context.closeDirectory(fi.pointee.fh)
                }
            } catch {
                replyError(req, error)
            }
        }

        ops.readdir = { req, _, size, offset, fi in
            guard let fi else { return replyError(req, .badFileHandle) }
            let context = sessionContext(req)
            guard let items = context.directory(fi.pointee.fh) else { return replyError(req, .badFileHandle) }
            guard offset >= 0, offset < items.count, size > 0 else {
                _ = fuse_reply_buf(req, nil, 0)
                return
            }
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            var used = 0
            var index = Int(offset)
            while index < items.count {
                let item = items[index]
                var st = stat()
                st.st_ino = numericCast(item.ino)
                st.st_mode = numericCast(item.mode)
                // The offset stored with an entry is where the next readdir resumes.
                let needed = item.name.withCString { cName in
                    fuse_add_direntry(req, buffer + used, size - used, cName, &st, off_t(index + 1))
                }
                if needed > size - used { break }
                used += needed
                index += 1
            }
            _ = fuse_reply_buf(req, buffer, used)
        }

        ops.releasedir = { req, _, fi in
            if let fi {
                sessionContext(req).closeDirectory(fi.pointee.fh)
            }
            replyOK(req)
        }

        ops.statfs = { req, _ in
            let stats = sessionContext(req).fileSystem.statfs()
            var buf = statvfs()
            buf.f_bsize = numericCast(stats.blockSize)
            buf.f_frsize = numericCast(stats.blockSize)
            buf.f_blocks = numericCast(stats.blocks)
            buf.f_bfree = numericCast(stats.freeBlocks)
            buf.f_bavail = numericCast(stats.availableBlocks)
            buf.f_files = numericCast(stats.files)
            buf.f_ffree = numericCast(stats.freeFiles)
            buf.f_favail = numericCast(stats.freeFiles)
            buf.f_namemax = numericCast(stats.maxNameLength)
            _ = fuse_reply_statfs(req, &buf)
        }

        ops.create = { req, parent, cName, mode, fi in
            guard let fi else { return replyError(req, .invalid) }
            guard let name = decodeName(cName) else { return replyError(req, .invalid) }
            let context = sessionContext(req)
            do throws(FuseError) {
                let (entry, opened) = try context.fileSystem.create(parent: parent, name: name,
                                                                    mode: UInt32(mode), flags: fi.pointee.flags)
                var param = makeEntry(entry)
                apply(opened, to: &fi.pointee)
                if fuse_reply_create(req, &param, fi) != 0 {
                    context.fileSystem.release(ino: entry.attributes.ino, fileHandle: opened.fileHandle)
                }
            } catch {
                replyError(req, error)
            }
        }

        return ops
    }
}
