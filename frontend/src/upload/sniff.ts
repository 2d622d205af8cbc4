// What a file is, from its first bytes (the API checks again when the
// upload lands; this only spares the user a pointless upload).

export type ImageMediaType = "image/png" | "image/jpeg" | "application/dicom";

/** Bytes needed to tell the three formats apart (DICOM: 128-byte preamble + "DICM"). */
export const SNIFF_BYTES = 132;

export function sniffMediaType(head: Uint8Array): ImageMediaType | null {
  const starts = (sig: number[], at = 0) => sig.every((b, i) => head[at + i] === b);
  if (starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return "image/png";
  if (starts([0xff, 0xd8, 0xff])) return "image/jpeg";
  if (head.length >= 132 && starts([0x44, 0x49, 0x43, 0x4d], 128)) return "application/dicom";
  return null;
}

export async function sniffFile(file: Blob): Promise<ImageMediaType | null> {
  const head = new Uint8Array(await file.slice(0, SNIFF_BYTES).arrayBuffer());
  return sniffMediaType(head);
}
