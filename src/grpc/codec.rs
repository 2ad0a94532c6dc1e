//! The protobuf codec of the generated services: prost's encoding and decoding, except that a
//! request that is not valid protobuf is answered `INVALID_ARGUMENT` (the caller sent it)
//! rather than prost's `INTERNAL`, which would page someone for a client's bug.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// Named by `build.rs` (`codec_path`) for every generated service and client.
#[derive(Debug, Clone, Copy)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Decodes `U`; malformed bytes are `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's message names the field and the fault, never a value.
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("the message is not valid protobuf ({e})")))
    }
}
