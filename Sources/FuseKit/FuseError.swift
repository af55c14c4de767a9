#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An error a file system operation answers with. It is an errno: what the
/// process that made the system call sees (scripts read these), so this type
/// is the one place where failures become errnos — FuseKit replies with
/// `fuse_reply_err(req, error.errno)` and nothing else.
public struct FuseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let errno: Int32

    public init(_ errno: Int32) {
        // 0 is not an error and a negative value is a libfuse-style return; keep the reply valid.
        self.errno = errno > 0 ? errno : EIO
    }

    public static let noEntry = FuseError(ENOENT)
    public static let io = FuseError(EIO)
    public static let access = FuseError(EACCES)
    public static let permission = FuseError(EPERM)
    public static let readOnly = FuseError(EROFS)
    public static let notDirectory = FuseError(ENOTDIR)
    public static let isDirectory = FuseError(EISDIR)
    public static let exists = FuseError(EEXIST)
    public static let notEmpty = FuseError(ENOTEMPTY)
    public static let noSpace = FuseError(ENOSPC)
    public static let invalid = FuseError(EINVAL)
    public static let busy = FuseError(EBUSY)
    public static let again = FuseError(EAGAIN)
    public static let notSupported = FuseError(EOPNOTSUPP)
    public static let notImplemented = FuseError(ENOSYS)
    public static let nameTooLong = FuseError(ENAMETOOLONG)
    public static let fileTooLarge = FuseError(EFBIG)
    public static let badFileHandle = FuseError(EBADF)
    public static let timedOut = FuseError(ETIMEDOUT)
    public static let notConnected = FuseError(ENOTCONN)
    public static let quota = FuseError(EDQUOT)

    public var description: String {
        "\(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Why a mount could not be set up; `message` says what to do about it.
public struct FuseMountError: Error, Sendable, CustomStringConvertible {
    public let errno: Int32
    public let message: String

    public init(errno: Int32, message: String) {
        self.errno = errno
        self.message = message
    }

    public var description: String { message }
}
