/* The C compiler's view of the V4L2 ABI, for the layout test in v4l2.rs.
 *
 * lookout's V4L2 bindings are pre-generated per architecture (vendor/v4l2-sys-mit), so a wrong file would
 * build fine and then fail or corrupt memory at the first ioctl. This file is compiled by build.rs with the
 * target's own C compiler and kernel headers; the test compares every entry below with the Rust side
 * (struct sizes, alignments, field offsets, and the ioctl request codes the v4l crate computes from them).
 */
#include <stddef.h>
#include <linux/videodev2.h>

struct lookout_layout_entry {
    const char *name;
    unsigned long long value;
};

#define SIZE(t) {"size " #t, sizeof(struct t)}, {"align " #t, _Alignof(struct t)}
#define OFF(t, f) {"offset " #t "." #f, offsetof(struct t, f)}
#define IOCTL(c) {"ioctl " #c, (unsigned long long)(c)}

const struct lookout_layout_entry lookout_v4l2_layout[] = {
    SIZE(v4l2_capability),
    SIZE(v4l2_fmtdesc),
    SIZE(v4l2_frmsizeenum),
    SIZE(v4l2_frmivalenum),
    SIZE(v4l2_pix_format),
    SIZE(v4l2_format),
    SIZE(v4l2_streamparm),
    SIZE(v4l2_requestbuffers),
    SIZE(v4l2_buffer),
    SIZE(v4l2_plane),
    SIZE(timeval),
    OFF(v4l2_buffer, bytesused),
    OFF(v4l2_buffer, flags),
    OFF(v4l2_buffer, timestamp),
    OFF(v4l2_buffer, sequence),
    OFF(v4l2_buffer, memory),
    OFF(v4l2_buffer, m),
    OFF(v4l2_buffer, length),
    OFF(v4l2_format, fmt),
    OFF(v4l2_pix_format, bytesperline),
    OFF(v4l2_pix_format, sizeimage),
    OFF(v4l2_streamparm, parm),
    OFF(v4l2_frmsizeenum, discrete),
    OFF(v4l2_frmivalenum, discrete),
    IOCTL(VIDIOC_QUERYCAP),
    IOCTL(VIDIOC_ENUM_FMT),
    IOCTL(VIDIOC_G_FMT),
    IOCTL(VIDIOC_S_FMT),
    IOCTL(VIDIOC_REQBUFS),
    IOCTL(VIDIOC_QUERYBUF),
    IOCTL(VIDIOC_QBUF),
    IOCTL(VIDIOC_DQBUF),
    IOCTL(VIDIOC_STREAMON),
    IOCTL(VIDIOC_STREAMOFF),
    IOCTL(VIDIOC_G_PARM),
    IOCTL(VIDIOC_S_PARM),
    IOCTL(VIDIOC_ENUM_FRAMESIZES),
    IOCTL(VIDIOC_ENUM_FRAMEINTERVALS),
};

const size_t lookout_v4l2_layout_len = sizeof(lookout_v4l2_layout) / sizeof(lookout_v4l2_layout[0]);
