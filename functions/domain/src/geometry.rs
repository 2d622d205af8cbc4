use serde::{Deserialize, Serialize};

/// An axis-aligned box in original-image pixels, COCO's convention:
/// `[x_min, y_min, width, height]` from the top-left corner.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "RawBox")]
pub struct PixelBox {
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    x_min: f32,
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    y_min: f32,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    width: f32,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    height: f32,
}

#[derive(Deserialize)]
struct RawBox {
    x_min: f32,
    y_min: f32,
    width: f32,
    height: f32,
}

impl TryFrom<RawBox> for PixelBox {
    type Error = BoxError;
    fn try_from(r: RawBox) -> Result<Self, Self::Error> {
        Self::new(r.x_min, r.y_min, r.width, r.height)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BoxError {
    #[error("box coordinates must be finite numbers")]
    NotFinite,
    #[error("box must start inside the image (x_min and y_min >= 0)")]
    Negative,
    #[error("box width and height must be greater than zero")]
    Empty,
    #[error("box [{x_min}, {y_min}, {width}, {height}] extends past the {image_width}x{image_height} image")]
    OutOfBounds { x_min: f32, y_min: f32, width: f32, height: f32, image_width: u32, image_height: u32 },
}

impl PixelBox {
    pub fn new(x_min: f32, y_min: f32, width: f32, height: f32) -> Result<Self, BoxError> {
        if ![x_min, y_min, width, height].iter().all(|v| v.is_finite()) {
            return Err(BoxError::NotFinite);
        }
        if x_min < 0.0 || y_min < 0.0 {
            return Err(BoxError::Negative);
        }
        if width <= 0.0 || height <= 0.0 {
            return Err(BoxError::Empty);
        }
        Ok(Self { x_min, y_min, width, height })
    }

    /// Checks the box against the image it is drawn on.
    pub fn within(self, image_width: u32, image_height: u32) -> Result<Self, BoxError> {
        // f64 so that large images do not lose the comparison to rounding.
        let fits_x = f64::from(self.x_min) + f64::from(self.width) <= f64::from(image_width);
        let fits_y = f64::from(self.y_min) + f64::from(self.height) <= f64::from(image_height);
        if fits_x && fits_y {
            Ok(self)
        } else {
            Err(BoxError::OutOfBounds { x_min: self.x_min, y_min: self.y_min, width: self.width, height: self.height, image_width, image_height })
        }
    }

    pub fn x_min(&self) -> f32 {
        self.x_min
    }
    pub fn y_min(&self) -> f32 {
        self.y_min
    }
    pub fn width(&self) -> f32 {
        self.width
    }
    pub fn height(&self) -> f32 {
        self.height
    }
    pub fn area(&self) -> f32 {
        self.width * self.height
    }
    /// COCO's `bbox` array.
    pub fn to_coco(&self) -> [f32; 4] {
        [self.x_min, self.y_min, self.width, self.height]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_on_construction_and_against_the_image() {
        let b = PixelBox::new(10.0, 20.0, 30.0, 40.0).expect("valid box");
        assert_eq!(b.to_coco(), [10.0, 20.0, 30.0, 40.0]);
        assert_eq!(b.area(), 1200.0);
        assert!(b.within(40, 60).is_ok());
        assert!(matches!(b.within(39, 60), Err(BoxError::OutOfBounds { .. })));
        assert_eq!(PixelBox::new(-1.0, 0.0, 1.0, 1.0), Err(BoxError::Negative));
        assert_eq!(PixelBox::new(0.0, 0.0, 0.0, 1.0), Err(BoxError::Empty));
        assert_eq!(PixelBox::new(f32::NAN, 0.0, 1.0, 1.0), Err(BoxError::NotFinite));
    }

    #[test]
    fn deserialising_validates_too() {
        let ok: PixelBox = serde_json::from_str(r#"{"x_min":1,"y_min":2,"width":3,"height":4}"#).expect("valid");
        assert_eq!(ok.to_coco(), [1.0, 2.0, 3.0, 4.0]);
        assert!(serde_json::from_str::<PixelBox>(r#"{"x_min":1,"y_min":2,"width":0,"height":4}"#).is_err());
    }
}
